//! The canonical encoding of an entitlement: the exact bytes a vendor signs.
//!
//! The signature covers meaning, not layout: the bytes are built from parsed fields, so an
//! administrator may reflow whitespace, join or split lines, reorder `KEY=value`
//! attributes and add comments without invalidating it, while any change to what is
//! licensed changes the bytes.
//!
//! **Invariant:** the encoding is injective over signed content. Every field is
//! length-prefixed and the field order is fixed, so no two entitlements that differ in a
//! signed field share their bytes, and no field's text can be shifted into its neighbour.
//! Changing this layout invalidates every license ever signed; a new layout needs a new
//! domain prefix.

use chrono::NaiveDate;

use crate::{Entitlement, Expiry, HostId, LineKind, SeatCount};

/// Prefix of every canonical encoding, so an entitlement signature can never be mistaken
/// for a signature over any other kind of message made with the same key.
pub const CANONICAL_DOMAIN: &[u8] = b"usher-entitlement-v1\0";

impl Entitlement {
    /// The bytes covered by the vendor's signature.
    ///
    /// Layout: [`CANONICAL_DOMAIN`], then these fields, each as a big-endian `u32` byte
    /// length followed by UTF-8 text: kind (`FEATURE`/`INCREMENT`), feature, vendor,
    /// version as written, expiry (`yyyy-mm-dd` or `permanent`), count (decimal or
    /// `uncounted`), start (`yyyy-mm-dd` or empty), issued (likewise), notice (empty when
    /// absent), hostid (`ANY` or the normalised id); then the number of attributes as a
    /// big-endian `u32` and each attribute's key and value as length-prefixed fields,
    /// sorted by key then value. `line` and `signature` are not covered.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(CANONICAL_DOMAIN);

        let hostid = match &self.hostid {
            HostId::Any => "ANY",
            HostId::Id(id) => id,
        };
        for field in [
            self.kind.keyword(),
            &self.feature,
            &self.vendor,
            self.version.as_str(),
            &self.expiry.field(),
            &self.count.field(),
            &self.start.map(iso).unwrap_or_default(),
            &self.issued.map(iso).unwrap_or_default(),
            self.notice.as_deref().unwrap_or_default(),
            hostid,
        ] {
            push_field(&mut out, field);
        }

        // Sorted here rather than trusted to be sorted, so hand-built entitlements encode
        // the same as parsed ones.
        let mut attrs: Vec<&(String, String)> = self.attrs.iter().collect();
        attrs.sort();
        push_len(&mut out, attrs.len());
        for (key, value) in attrs {
            push_field(&mut out, key);
            push_field(&mut out, value);
        }
        out
    }
}

impl Entitlement {
    /// The entitlement as one license-file line (`FEATURE cad acme 2025 2027-12-31 10
    /// ... SIGN="..."`), which [`crate::parse`] reads back into an entitlement with the
    /// same canonical bytes and signature. Used to hand a client the vendor-signed line a
    /// borrowed seat was drawn from, so it can verify it with the vendor's key alone.
    ///
    /// Every attribute value is written in double quotes (which the parser removes), an
    /// empty one as a bare key; parsed values never hold a quote, so this always
    /// round-trips for entitlements that came from a file.
    pub fn to_line(&self) -> String {
        let mut line = format!(
            "{} {} {} {} {} {}",
            self.kind.keyword(),
            self.feature,
            self.vendor,
            self.version.as_str(),
            self.expiry.field(),
            self.count.field(),
        );
        let mut attr = |key: &str, value: &str| {
            line.push(' ');
            line.push_str(key);
            if !value.is_empty() {
                line.push_str("=\"");
                line.push_str(value);
                line.push('"');
            }
        };
        if let Some(start) = self.start {
            attr("START", &iso(start));
        }
        if let Some(issued) = self.issued {
            attr("ISSUED", &iso(issued));
        }
        if let Some(notice) = &self.notice {
            attr("NOTICE", notice);
        }
        if let HostId::Id(id) = &self.hostid {
            attr("HOSTID", id);
        }
        for (key, value) in &self.attrs {
            attr(key, value);
        }
        if let Some(signature) = self.signature {
            attr("SIGN", &hex::encode_upper(signature));
        }
        line
    }
}

// The spellings below are signed (they are fields of `canonical_bytes`) and written (by
// `to_line`): one spelling each, so that a line written out always carries the signature
// of the bytes it was signed as.

impl LineKind {
    /// The keyword that starts the line: `FEATURE` or `INCREMENT`.
    pub fn keyword(self) -> &'static str {
        match self {
            LineKind::Feature => "FEATURE",
            LineKind::Increment => "INCREMENT",
        }
    }
}

impl Expiry {
    /// The expiry field as a license line writes it: `yyyy-mm-dd` or `permanent`.
    pub fn field(&self) -> String {
        match self {
            Expiry::On(date) => iso(*date),
            Expiry::Permanent => "permanent".to_owned(),
        }
    }
}

impl SeatCount {
    /// The count field as a license line writes it: the number, `uncounted` or `token`.
    pub fn field(&self) -> String {
        match self {
            SeatCount::Counted(n) => n.to_string(),
            SeatCount::Uncounted => "uncounted".to_owned(),
            SeatCount::Token => "token".to_owned(),
        }
    }
}

fn iso(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

fn push_field(out: &mut Vec<u8>, text: &str) {
    push_len(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    // A field of 4 GiB or more cannot come from a license file anyone could sign; the
    // saturated length keeps this infallible.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entitlement {
        Entitlement {
            kind: LineKind::Increment,
            feature: "cad".into(),
            vendor: "acme".into(),
            version: "2025.1".parse().unwrap(),
            expiry: Expiry::On(NaiveDate::from_ymd_opt(2027, 12, 31).unwrap()),
            count: SeatCount::Counted(10),
            start: None,
            issued: None,
            notice: Some("Ünïcode".into()),
            hostid: HostId::Any,
            attrs: vec![("LINGER".into(), "60".into())],
            signature: None,
            line: 3,
        }
    }

    #[test]
    fn exact_layout() {
        let mut expected = b"usher-entitlement-v1\0".to_vec();
        for field in [
            "INCREMENT",
            "cad",
            "acme",
            "2025.1",
            "2027-12-31",
            "10",
            "",
            "",
            "Ünïcode",
            "ANY",
        ] {
            expected.extend_from_slice(&(field.len() as u32).to_be_bytes());
            expected.extend_from_slice(field.as_bytes());
        }
        expected.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 6]);
        expected.extend_from_slice(b"LINGER\0\0\0\x0260");
        assert_eq!(sample().canonical_bytes(), expected);
    }

    #[test]
    fn line_and_signature_are_not_covered() {
        let mut other = sample();
        other.line = 99;
        other.signature = Some([7; 64]);
        assert_eq!(other.canonical_bytes(), sample().canonical_bytes());
    }

    /// Every spelling of every kind, expiry and count is read back by the parser as what
    /// it was written for, with the same signed bytes.
    #[test]
    fn every_keyword_round_trips_through_the_parser() {
        let date = NaiveDate::from_ymd_opt(2027, 12, 31).unwrap();
        for kind in [LineKind::Feature, LineKind::Increment] {
            for expiry in [Expiry::On(date), Expiry::Permanent] {
                for count in [
                    SeatCount::Counted(7),
                    SeatCount::Uncounted,
                    SeatCount::Token,
                ] {
                    let mut e = sample();
                    (e.kind, e.expiry, e.count) = (kind, expiry, count);
                    match count {
                        SeatCount::Uncounted => e.hostid = HostId::Id("HOSTNAME=node1".into()),
                        SeatCount::Token => e.attrs = vec![("TOKEN".into(), "<base 1.0 2>".into())],
                        SeatCount::Counted(_) => {}
                    }
                    let line = e.to_line();
                    let file =
                        crate::parse("k.lic", &line).unwrap_or_else(|err| panic!("{line}: {err}"));
                    let back = &file.entitlements[0];
                    assert_eq!((back.kind, back.expiry, back.count), (kind, expiry, count));
                    assert_eq!(back.canonical_bytes(), e.canonical_bytes(), "{line}");
                }
            }
        }
    }

    #[test]
    fn field_boundaries_cannot_shift() {
        let mut a = sample();
        let mut b = sample();
        a.feature = "cada".into();
        a.vendor = "cme".into();
        b.feature = "cad".into();
        b.vendor = "acme".into();
        assert_ne!(a.canonical_bytes(), b.canonical_bytes());
    }
}
