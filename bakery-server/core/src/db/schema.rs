//! The database schema as numbered migrations, applied in order and recorded in
//! `PRAGMA user_version`.

/// Migration `i` brings the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the inventory.
    "
    CREATE TABLE bakeforms (
        name        TEXT PRIMARY KEY NOT NULL,
        location    TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('importing', 'ready', 'failed')),
        error       TEXT,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE pis (
        serial        TEXT PRIMARY KEY NOT NULL,
        state         TEXT NOT NULL CHECK (state IN ('fridge', 'preparing', 'baked', 'unbaking')),
        bakeform      TEXT,
        address       TEXT,
        network       TEXT,
        metadata      TEXT NOT NULL DEFAULT '{}',
        last_error    TEXT,
        power_on      INTEGER NOT NULL DEFAULT 1,
        operation     TEXT,
        pending_root  TEXT,
        created_at    INTEGER NOT NULL
    );
    CREATE TABLE disks (
        id          TEXT PRIMARY KEY NOT NULL,
        location    TEXT NOT NULL,
        size        INTEGER NOT NULL,
        ephemeral   INTEGER NOT NULL DEFAULT 0,
        is_root     INTEGER NOT NULL DEFAULT 0,
        pi          TEXT REFERENCES pis(serial),
        position    INTEGER NOT NULL DEFAULT 0,
        metadata    TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX disks_by_pi ON disks (pi, position);
    ",
    // 2: operator visibility: the event log and the boot records of the boot timelines.
    "
    CREATE TABLE events (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        time      INTEGER NOT NULL,
        kind      TEXT NOT NULL,
        pi        TEXT,
        bakeform  TEXT,
        disk      TEXT,
        message   TEXT
    );
    CREATE TABLE boot_records (
        pi           TEXT NOT NULL,
        boot         INTEGER NOT NULL,
        seq          INTEGER NOT NULL,
        time         INTEGER NOT NULL,
        file         TEXT NOT NULL,
        bytes        INTEGER NOT NULL,
        outcome      TEXT NOT NULL,
        via          TEXT NOT NULL,
        elapsed_ms   INTEGER NOT NULL,
        size_probed  INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (pi, boot, seq)
    );
    ",
    // 3: stable NFS export numbers (nfs-ganesha Export_Id = base + number), handed out
    // round-robin; see db/exports.rs.
    "
    CREATE TABLE export_numbers (
        disk    TEXT PRIMARY KEY NOT NULL,
        number  INTEGER NOT NULL UNIQUE
    );
    CREATE TABLE export_number_next (
        id    INTEGER PRIMARY KEY CHECK (id = 0),
        next  INTEGER NOT NULL
    );
    INSERT INTO export_number_next (id, next) VALUES (0, 0);
    ",
    // 4: cloud-init NoCloud files per Pi, set by its operator, deleted when it is unbaked.
    "
    CREATE TABLE cloud_init (
        pi    TEXT NOT NULL REFERENCES pis(serial),
        file  TEXT NOT NULL,
        data  BLOB NOT NULL,
        PRIMARY KEY (pi, file)
    );
    ",
    // 5: how a Pi's root reaches it while it is in the oven: 'nfs' (a tree exported over
    // NFS) or 'nbd' (an ext4 image served by nbd-server).
    "
    ALTER TABLE pis ADD COLUMN root_kind TEXT NOT NULL DEFAULT 'nfs';
    ",
    // 6: disk snapshots: one image file each under snapshots/<disk>/, deleted with the disk.
    "
    CREATE TABLE snapshots (
        id          TEXT PRIMARY KEY NOT NULL,
        disk        TEXT NOT NULL REFERENCES disks(id),
        size        INTEGER NOT NULL,
        created_at  INTEGER NOT NULL,
        metadata    TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX snapshots_by_disk ON snapshots (disk, created_at);
    ",
    // 7: hardware inventory: the model the boot path revealed, the operator's labels, when
    // the Pi last asked for a boot file (unix ms, written at most once a minute).
    "
    ALTER TABLE pis ADD COLUMN model TEXT;
    ALTER TABLE pis ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE pis ADD COLUMN last_seen INTEGER;
    ",
];
