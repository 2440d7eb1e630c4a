//! The committed header is what cbindgen generates from the source today.

use std::path::Path;

/// Generates the header from the crate's source and settings.
pub fn generate() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).unwrap();
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn header_matches_the_source() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/usher.h");
    let fresh = generate();
    if std::env::var_os("USHER_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/usher.h is out of date with the source: regenerate it with \
         `USHER_BLESS=1 cargo test -p usher-capi --test it -- header`"
    );
}

/// usher.pc names this version and the libraries a static link needs (the ones the C
/// tests link with).
#[test]
fn pkg_config_file_matches_the_crate() {
    let pc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("usher.pc")).unwrap();
    assert!(
        pc.lines()
            .any(|l| l == format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "usher.pc's Version is not {}",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        pc.lines()
            .any(|l| l == format!("Libs.private: {}", crate::c::STATIC_LIBS)),
        "usher.pc's Libs.private differs from what the tests link with"
    );
    let header = generate();
    assert!(
        header.contains(&format!(
            "#define USHER_HEADER_VERSION \"{}\"",
            env!("CARGO_PKG_VERSION")
        )),
        "cbindgen.toml's USHER_HEADER_VERSION is not the crate version"
    );
}
