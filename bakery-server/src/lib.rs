//! Bakery server library: inventory, bakes, disks, exports, power, HTTP API and boot path.
