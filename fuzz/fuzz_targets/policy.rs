//! Arbitrary text through the policy (options) file parser, and the questions the ledger
//! asks of whatever parses.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(policy) = usher_core::Policy::parse("fuzz.opt", &text) {
        let who = usher_core::Who {
            user: "alice",
            host: "ws1",
            display: ":0",
            address: "10.1.2.3:4000",
        };
        let _ = policy.excluded("cad", &who);
        let _ = policy.priority("cad", &who);
        let _ = policy.named_users("cad");
        let _ = policy.timeout("cad");
        for r in policy.reservations("cad").chain(policy.limits("cad")) {
            let _ = policy.matches(&r.target, &who);
        }
    }
});
