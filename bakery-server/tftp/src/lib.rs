//! TFTP: a protocol core on byte buffers with no I/O, and a tokio UDP server around it.
