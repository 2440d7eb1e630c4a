//! C programs (tests/c/) compiled with the strictest C99 flags, linked statically and
//! against the shared library, and run (natively and under valgrind memcheck) against a
//! real in-process usherd.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use usher_client::{Client, ClientConfig, ServerAddr};
use usher_server::{Config, Server};

const LICENSE: &str = "\
FEATURE cad acme 2025 permanent 3 HOSTID=ANY
FEATURE sim acme 1.0 permanent 2 HOSTID=ANY
";

const CFLAGS: &[&str] = &["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"];
const CXXFLAGS: &[&str] = &["-std=c++17", "-Wall", "-Wextra", "-Werror"];

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding libusher.a and libusher.so (`target/debug`), freshly built:
/// `cargo test` builds only the rlib a test links, so the C libraries are built here.
fn lib_dir() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let done = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "usher-capi", "--lib"])
            .current_dir(crate_dir())
            .output()
            .expect("cargo runs");
        assert!(
            done.status.success(),
            "cargo build -p usher-capi --lib failed:\n{}",
            String::from_utf8_lossy(&done.stderr)
        );
    });
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    assert!(
        dir.join("libusher.a").exists() && dir.join("libusher.so").exists(),
        "libusher.a and libusher.so are built next to {}",
        dir.display()
    );
    dir
}

/// How the program is linked.
#[derive(Clone, Copy, Debug)]
pub enum Link {
    Static,
    Shared,
    /// tests/c/wrapper.cpp (usher.hpp), C++17, against the shared library.
    Cpp,
}

/// Compiles `tests/c/NAME.c` (once per link mode) and returns the program.
fn program(link: Link) -> PathBuf {
    static STATIC: OnceLock<PathBuf> = OnceLock::new();
    static SHARED: OnceLock<PathBuf> = OnceLock::new();
    static CPP: OnceLock<PathBuf> = OnceLock::new();
    let cell = match link {
        Link::Static => &STATIC,
        Link::Shared => &SHARED,
        Link::Cpp => &CPP,
    };
    cell.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("scenarios-{link:?}"));
        let lib = lib_dir();
        let (compiler, flags, source) = match link {
            Link::Cpp => ("c++", CXXFLAGS, "tests/c/wrapper.cpp"),
            _ => ("cc", CFLAGS, "tests/c/scenarios.c"),
        };
        let mut cc = std::process::Command::new(compiler);
        cc.args(flags)
            .arg("-I")
            .arg(crate_dir().join("include"))
            .arg(crate_dir().join(source))
            .arg("-o")
            .arg(&out);
        match link {
            Link::Static => {
                cc.arg(lib.join("libusher.a"))
                    .args(STATIC_LIBS.split_whitespace());
            }
            Link::Shared | Link::Cpp => {
                cc.arg("-L")
                    .arg(&lib)
                    .arg("-lusher")
                    .arg(format!("-Wl,-rpath,{}", lib.display()));
            }
        }
        let done = cc.output().expect("cc runs");
        assert!(
            done.status.success(),
            "cc failed ({cc:?}):\n{}",
            String::from_utf8_lossy(&done.stderr)
        );
        out
    })
    .clone()
}

/// What a static libusher.a needs besides itself (as in usher.pc's `Libs.private`).
pub const STATIC_LIBS: &str = "-lpthread -ldl -lm -lrt -lgcc_s";

/// A server with the test license, restartable on the same port.
struct Fixture {
    _tmp: tempfile::TempDir,
    config: Config,
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), usher_server::ServerError>>>,
}

impl Fixture {
    async fn start() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let (key, public) = usher_license::keygen("acme", &tmp.path().join("keys")).unwrap();
        let key = usher_license::VendorSigningKey::read_from(&key).unwrap();
        let license = tmp.path().join("acme.lic");
        let signed = usher_license::sign_text("acme.lic", LICENSE, &key).unwrap();
        std::fs::write(&license, signed.text).unwrap();
        let mut config = Config::new(tmp.path().join("data"));
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.license_files = vec![license];
        config.vendor_keys = vec![public];
        // Short enough that heartbeats matter within a test, long enough for valgrind.
        config.heartbeat_interval = Duration::from_millis(500);
        config.session_ttl = Duration::from_secs(3);
        config.min_remove = Duration::ZERO;
        config.insecure_plaintext = true;
        config.admin_listen = None;
        let mut f = Fixture {
            _tmp: tmp,
            config,
            port: 0,
            stop: None,
            task: None,
        };
        f.run().await;
        f
    }

    async fn run(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let server = loop {
            match Server::bind(self.config.clone()).await {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("the server does not bind: {e}"),
            }
        };
        self.port = server.local_addr().port();
        self.config.listen = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(server.run(async {
            let _ = stopped.await;
        })));
    }

    async fn restart(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task
            .take()
            .unwrap()
            .await
            .unwrap()
            .expect("the server stops cleanly");
        self.run().await;
    }

    async fn client(&self) -> Client {
        let mut config = ClientConfig::new(vec![ServerAddr {
            host: "127.0.0.1".into(),
            port: self.port,
        }]);
        config.insecure_plaintext = true;
        Client::connect(config).await.unwrap()
    }

    /// Waits (at most 10 s) until `want` seats are in use over all features.
    async fn wait_in_use(&self, want: u32) {
        let client = self.client().await;
        let mut seen = 0;
        for _ in 0..200 {
            let report = client.status("").await.unwrap();
            seen = report.features.iter().map(|f| f.in_use).sum();
            if seen == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{seen} seats in use, expected {want}");
    }
}

/// How to run the program.
#[derive(Clone, Copy, Debug)]
enum Under {
    Native,
    Valgrind,
    /// tests/java/Smoke.java with this `java` (22 or newer), through the shared library.
    Java(&'static Path),
}

/// Runs scenario `name` of the program linked as `link`, answering its requests.
async fn scenario(name: &str, link: Link, under: Under) {
    let program = program(link);
    let mut f = Fixture::start().await;
    let mut cmd = match under {
        Under::Native => tokio::process::Command::new(&program),
        Under::Valgrind => {
            let mut c = tokio::process::Command::new("valgrind");
            c.args([
                "--quiet",
                "--error-exitcode=99",
                "--leak-check=full",
                "--show-leak-kinds=definite,indirect,possible",
                "--errors-for-leak-kinds=definite,indirect,possible",
                "--child-silent-after-fork=yes",
            ])
            .arg(format!(
                "--suppressions={}",
                crate_dir().join("tests/valgrind.supp").display()
            ))
            .arg(&program);
            c
        }
        Under::Java(java) => {
            let mut c = tokio::process::Command::new(java);
            c.arg("--enable-native-access=ALL-UNNAMED")
                .arg(crate_dir().join("tests/java/Smoke.java"))
                .arg(lib_dir().join("libusher.so"));
            c
        }
    };
    let mut child = cmd
        .arg(name)
        .env("USHER_LICENSE", format!("{}@127.0.0.1", f.port))
        // Trust on first use remembers each server's id by address: a test server's
        // fresh key on a reused port must not meet a previous run's memory in $HOME.
        .env("USHER_KNOWN_SERVERS", f._tmp.path().join("known_servers"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the program starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut held = Vec::new();
    let limit = match under {
        Under::Native | Under::Java(_) => Duration::from_secs(60),
        Under::Valgrind => Duration::from_secs(240),
    };
    let talk = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let mut words = line.split_whitespace();
            let (Some("ASK"), Some(what), Some(arg)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            let arg: u64 = arg.parse().unwrap();
            match what {
                "INUSE" => f.wait_in_use(arg as u32).await,
                "REMOVE" => {
                    let mut admin = usher_client::admin::AdminConnection::connect(
                        &f.config.admin_socket(),
                        Duration::from_secs(10),
                    )
                    .await
                    .unwrap();
                    admin
                        .call(usher_proto::request::Kind::Remove(usher_proto::Remove {
                            lease_id: arg,
                        }))
                        .await
                        .unwrap();
                }
                "RESTART" => f.restart().await,
                "HOLD_THEN_RELEASE" => {
                    let client = f.client().await;
                    let lic = client.checkout("cad").count(arg as u32).await.unwrap();
                    held.push(tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        drop(lic);
                        drop(client);
                    }));
                }
                other => panic!("unknown request {other}"),
            }
            stdin.write_all(b"done\n").await.unwrap();
        }
    };
    tokio::time::timeout(limit, talk)
        .await
        .unwrap_or_else(|_| panic!("scenario {name} ({link:?}, {under:?}) did not finish"));
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "scenario {name} ({link:?}, {under:?}) failed with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

macro_rules! scenarios {
    ($($name:ident),*) => {
        mod static_linked {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    scenario(stringify!($name), Link::Static, Under::Native).await;
                }
            )*
        }
        mod shared_under_valgrind {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if !valgrind_present() {
                        assert!(std::env::var_os("CI").is_none(), "valgrind is missing in CI");
                        eprintln!("valgrind is not installed (scripts/test installs it): skipped");
                        return;
                    }
                    scenario(stringify!($name), Link::Shared, Under::Valgrind).await;
                }
            )*
        }
    };
}

fn valgrind_present() -> bool {
    std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

scenarios!(grant, deny, queue, lost, restart, free, manual, fork);

/// usher.hpp: RAII checkout and checkin, exceptions carrying the C code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpp_wrapper() {
    scenario("wrapper", Link::Cpp, Under::Native).await;
}

/// A `java` of version 22 or newer (the FFM API is final there): `JAVA_HOME`'s, then
/// those in /usr/lib/jvm, then the one on the `PATH`.
fn java_22() -> Option<&'static Path> {
    static JAVA: OnceLock<Option<PathBuf>> = OnceLock::new();
    JAVA.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = std::env::var_os("JAVA_HOME")
            .map(|h| PathBuf::from(h).join("bin/java"))
            .into_iter()
            .collect();
        if let Ok(dirs) = std::fs::read_dir("/usr/lib/jvm") {
            candidates.extend(dirs.flatten().map(|d| d.path().join("bin/java")));
        }
        candidates.push("java".into());
        candidates.into_iter().find(|java| {
            std::process::Command::new(java)
                .arg("-version")
                .output()
                .ok()
                .and_then(|o| {
                    let text = String::from_utf8_lossy(&o.stderr).into_owned();
                    let quoted = text.split('"').nth(1)?.to_string();
                    quoted.split('.').next()?.parse::<u32>().ok()
                })
                .is_some_and(|major| major >= 22)
        })
    })
    .as_deref()
}

/// Java through the C ABI with the Foreign Function and Memory API, where a JDK 22+ is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_ffm_smoke() {
    let Some(java) = java_22() else {
        eprintln!("no JDK 22 or newer (JAVA_HOME, /usr/lib/jvm, PATH): Java smoke test skipped");
        return;
    };
    scenario("smoke", Link::Shared, Under::Java(java)).await;
}

/// The header compiles as C++ too (with the strictest warnings).
#[test]
fn header_compiles_as_cpp() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("header-cpp.o");
    let src = Path::new(env!("CARGO_TARGET_TMPDIR")).join("header.cpp");
    std::fs::write(&src, "#include \"usher.h\"\nint main() { return usher_abi_version() == USHER_ABI_VERSION ? 0 : 1; }\n").unwrap();
    let done = std::process::Command::new("c++")
        .args([
            "-std=c++11",
            "-Wall",
            "-Wextra",
            "-pedantic",
            "-Werror",
            "-c",
        ])
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("c++ runs");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
}
