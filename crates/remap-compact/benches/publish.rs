//! Placeholder (the bench is written next).
fn main() {}
