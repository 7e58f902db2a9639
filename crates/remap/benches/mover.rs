//! Mover benches: the mover against a raw `UFFDIO_MOVE` loop (in progress).

fn main() {}
