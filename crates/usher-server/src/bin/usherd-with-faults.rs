//! `usherd` with the fault-injection points compiled in (feature `fault-injection`), for
//! the process-level fail-loudly tests: the same program as `usherd`, built a second time.

#[path = "../main.rs"]
mod usherd;

fn main() -> std::process::ExitCode {
    usherd::main()
}
