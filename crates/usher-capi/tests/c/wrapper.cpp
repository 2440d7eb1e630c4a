// The C++ wrapper against a real usherd (run by tests/it/c.rs like scenarios.c).
#include <cstdio>
#include <cstring>
#include <iostream>

#include "usher.hpp"

static void ask(const char *what, unsigned long long arg) {
    char line[64];
    std::printf("ASK %s %llu\n", what, arg);
    std::fflush(stdout);
    if (std::fgets(line, sizeof line, stdin) == nullptr) {
        throw std::runtime_error("the harness went away");
    }
}

int main() {
    try {
        usher::client client;
        client.set(USHER_OPT_INSECURE_PLAINTEXT, 1).set(USHER_OPT_PROGRAM, std::string("wrapper"));
        {
            usher::license lic = client.checkout("cad", "2025", 2);
            if (lic.status() != USHER_STATUS_GRANTED || lic.count() != 2 || lic.lease_id() == 0 ||
                lic.server().find("@127.0.0.1") == std::string::npos || !lic.statement().empty()) {
                std::cerr << "FAIL: grant information\n";
                return 1;
            }
            ask("INUSE", 2);
        } // destroyed: checked in
        ask("INUSE", 0);
        try {
            client.checkout("nosuch");
            std::cerr << "FAIL: no exception\n";
            return 1;
        } catch (const usher::error &e) {
            if (e.code() != USHER_E_NO_SUCH_FEATURE || e.retryable() ||
                std::strstr(e.what(), "nosuch") == nullptr) {
                std::cerr << "FAIL: " << e.code() << " " << e.what() << "\n";
                return 1;
            }
        }
        usher::license kept = client.checkout("sim");
        ask("INUSE", 1);
    } catch (const std::exception &e) {
        std::cerr << "FAIL: " << e.what() << "\n";
        return 1;
    }
    // The client (and the license it still held) is gone.
    ask("INUSE", 0);
    return 0;
}
