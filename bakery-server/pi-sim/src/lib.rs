//! Simulated Raspberry Pis that network-boot over TFTP against a bakery server.
