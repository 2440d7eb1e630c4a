//! Tests of the C ABI: the header, and C programs run against a real server.

mod c;
mod header;
