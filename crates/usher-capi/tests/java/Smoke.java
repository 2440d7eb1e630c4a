// A smoke test of the C ABI from Java through the Foreign Function and Memory API
// (JDK 22+): check out a seat, read its lease id, check it in. Run by tests/it/c.rs.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

public class Smoke {
    static final BufferedReader IN = new BufferedReader(new InputStreamReader(System.in));

    static void ask(String what, long arg) throws Exception {
        System.out.println("ASK " + what + " " + arg);
        System.out.flush();
        if (IN.readLine() == null) throw new IllegalStateException("the harness went away");
    }

    static void ok(int rc, String what) {
        if (rc != 0) throw new IllegalStateException(what + " returned " + rc);
    }

    public static void main(String[] args) throws Throwable {
        Linker linker = Linker.nativeLinker();
        try (Arena arena = Arena.ofConfined()) {
            SymbolLookup lib = SymbolLookup.libraryLookup(java.nio.file.Path.of(args[0]), arena);
            MethodHandle version = linker.downcallHandle(lib.find("usher_version").orElseThrow(),
                FunctionDescriptor.of(ADDRESS));
            MethodHandle clientNew = linker.downcallHandle(lib.find("usher_client_new").orElseThrow(),
                FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
            MethodHandle setInt = linker.downcallHandle(lib.find("usher_client_set_int").orElseThrow(),
                FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_LONG));
            MethodHandle checkout = linker.downcallHandle(lib.find("usher_checkout").orElseThrow(),
                FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, JAVA_INT, JAVA_INT, JAVA_LONG, ADDRESS));
            MethodHandle leaseId = linker.downcallHandle(lib.find("usher_license_lease_id").orElseThrow(),
                FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
            MethodHandle checkin = linker.downcallHandle(lib.find("usher_checkin").orElseThrow(),
                FunctionDescriptor.of(JAVA_INT, ADDRESS));
            MethodHandle clientFree = linker.downcallHandle(lib.find("usher_client_free").orElseThrow(),
                FunctionDescriptor.of(JAVA_INT, ADDRESS));

            String v = ((MemorySegment) version.invokeExact()).reinterpret(64).getString(0);
            if (v.isEmpty()) throw new IllegalStateException("no version");
            MemorySegment out = arena.allocate(ADDRESS);
            ok((int) clientNew.invokeExact(MemorySegment.NULL, out), "usher_client_new");
            MemorySegment client = out.get(ADDRESS, 0);
            ok((int) setInt.invokeExact(client, 4 /* USHER_OPT_INSECURE_PLAINTEXT */, 1L), "set_int");
            ok((int) checkout.invokeExact(client, arena.allocateFrom("cad"), MemorySegment.NULL, 1,
                0 /* USHER_CHECKOUT_NOWAIT */, 0L, out), "usher_checkout");
            MemorySegment lic = out.get(ADDRESS, 0);
            MemorySegment id = arena.allocate(JAVA_LONG);
            ok((int) leaseId.invokeExact(lic, id), "usher_license_lease_id");
            if (id.get(JAVA_LONG, 0) == 0) throw new IllegalStateException("lease id 0");
            ask("INUSE", 1);
            ok((int) checkin.invokeExact(lic), "usher_checkin");
            ask("INUSE", 0);
            ok((int) clientFree.invokeExact(client), "usher_client_free");
        }
    }
}
