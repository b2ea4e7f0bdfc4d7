//! Reads Raspberry Pi SD-card images without mounting them and clones root trees fast.
