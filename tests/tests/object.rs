//! Checks on the built BPF object, on the host without loading it: the program, its license,
//! and every map's type, key and value sizes equal to the guard-common types.

use std::mem::size_of;

use aya_obj::Object;
use guard_common::{
    GuardConfig,
    maps::{
        ALLOW_V4, ALLOW_V4_CHUNKS, ALLOW_V4_OWNERS, ALLOW_V4_ROWS, ALLOW_V6, ATTACHMENTS,
        Attachment, CONFIG_SECTION, COUNTERS, DENY_V4, DENY_V4_CHUNKS, DENY_V4_OWNERS,
        DENY_V4_ROWS, DENY_V6, GLOBAL_BUCKET, PREFIX_BUCKETS, PROGRAM, PrefixEntry, SOURCE_BUCKETS,
        TOP_TALKERS, TopEntry, V4_CHUNKS, V4_CHUNKS_BYTES, V4_ROWS_BYTES, V4Chunk, V4Chunks, V4Row,
        V4Rows, object_name,
    },
    ratelimit::BucketKey,
    verdict::{COUNTER_ENTRIES, Counter},
};
use guard_user::{maps::MAP_NAMES, object::OBJECT};

const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
const BPF_F_MMAPABLE: u32 = 1 << 10;
/// An LPM trie key: a u32 prefix length, then the address.
const fn lpm_key(addr: usize) -> usize {
    4 + addr
}

#[test]
fn the_object_has_the_program_and_license() {
    let obj = Object::parse(OBJECT).expect("the embedded object parses");
    assert!(
        obj.programs.contains_key(PROGRAM),
        "programs: {:?}",
        obj.programs.keys()
    );
    assert_eq!(
        obj.programs.len(),
        1,
        "one program: {:?}",
        obj.programs.keys()
    );
    let license = obj.license.to_str().unwrap();
    assert!(license.contains("GPL"), "license {license:?}");
}

#[test]
fn every_map_matches_the_shared_types() {
    let obj = Object::parse(OBJECT).expect("the embedded object parses");
    let expected: &[(&str, u32, usize, usize, Option<u32>)] = &[
        (
            CONFIG_SECTION,
            BPF_MAP_TYPE_ARRAY,
            4,
            size_of::<GuardConfig>(),
            Some(1),
        ),
        (
            COUNTERS,
            BPF_MAP_TYPE_PERCPU_ARRAY,
            4,
            size_of::<Counter>(),
            Some(COUNTER_ENTRIES),
        ),
        (
            ALLOW_V4,
            BPF_MAP_TYPE_LPM_TRIE,
            lpm_key(4),
            size_of::<PrefixEntry>(),
            None,
        ),
        (
            object_name(ALLOW_V4_ROWS),
            BPF_MAP_TYPE_ARRAY,
            4,
            V4_ROWS_BYTES as usize,
            Some(1),
        ),
        (
            object_name(ALLOW_V4_CHUNKS),
            BPF_MAP_TYPE_ARRAY,
            4,
            V4_CHUNKS_BYTES as usize,
            Some(1),
        ),
        (ALLOW_V4_OWNERS, BPF_MAP_TYPE_ARRAY, 4, 8, Some(V4_CHUNKS)),
        (
            ALLOW_V6,
            BPF_MAP_TYPE_LPM_TRIE,
            lpm_key(16),
            size_of::<PrefixEntry>(),
            None,
        ),
        (
            DENY_V4,
            BPF_MAP_TYPE_LPM_TRIE,
            lpm_key(4),
            size_of::<PrefixEntry>(),
            None,
        ),
        (
            object_name(DENY_V4_ROWS),
            BPF_MAP_TYPE_ARRAY,
            4,
            V4_ROWS_BYTES as usize,
            Some(1),
        ),
        (
            object_name(DENY_V4_CHUNKS),
            BPF_MAP_TYPE_ARRAY,
            4,
            V4_CHUNKS_BYTES as usize,
            Some(1),
        ),
        (DENY_V4_OWNERS, BPF_MAP_TYPE_ARRAY, 4, 8, Some(V4_CHUNKS)),
        (
            DENY_V6,
            BPF_MAP_TYPE_LPM_TRIE,
            lpm_key(16),
            size_of::<PrefixEntry>(),
            None,
        ),
        (
            SOURCE_BUCKETS,
            BPF_MAP_TYPE_LRU_HASH,
            size_of::<BucketKey>(),
            8,
            None,
        ),
        (
            PREFIX_BUCKETS,
            BPF_MAP_TYPE_LRU_HASH,
            size_of::<BucketKey>(),
            8,
            None,
        ),
        (GLOBAL_BUCKET, BPF_MAP_TYPE_ARRAY, 4, 8, Some(1)),
        (
            TOP_TALKERS,
            BPF_MAP_TYPE_LRU_HASH,
            size_of::<BucketKey>(),
            size_of::<TopEntry>(),
            None,
        ),
        (
            ATTACHMENTS,
            BPF_MAP_TYPE_HASH,
            4,
            size_of::<Attachment>(),
            None,
        ),
    ];
    // Besides guard's own maps: aya-log's ring buffer and the read-only data holding its
    // AYA_LOG_LEVEL (fixed at load; a constant to the verifier).
    let extra = ["AYA_LOGS", ".rodata"];
    for name in obj.maps.keys() {
        assert!(
            expected.iter().any(|e| e.0 == name) || extra.contains(&name.as_str()),
            "unexpected map {name}"
        );
    }
    assert_eq!(
        obj.maps.len(),
        expected.len() + extra.len(),
        "maps: {:?}",
        obj.maps.keys()
    );
    for (name, kind, key, value, entries) in expected {
        let m = obj
            .maps
            .get(*name)
            .unwrap_or_else(|| panic!("no map {name}"));
        assert_eq!(m.map_type(), *kind, "{name} type");
        assert_eq!(m.key_size() as usize, *key, "{name} key size");
        assert_eq!(m.value_size() as usize, *value, "{name} value size");
        if let Some(n) = entries {
            assert_eq!(m.max_entries(), *n, "{name} entries");
        }
        // User space maps the IPv4 tables into memory to read and change them in place. The
        // rows and chunks are global data, whose maps guard creates itself (memory-mappable):
        // the object cannot say so.
        let mmapable = [ALLOW_V4_OWNERS, DENY_V4_OWNERS].contains(name);
        assert_eq!(
            m.map_flags() & BPF_F_MMAPABLE != 0,
            mmapable,
            "{name} flags {:#x}",
            m.map_flags()
        );
        assert!(
            MAP_NAMES.iter().any(|pin| object_name(pin) == *name),
            "{name} is not pinned by user space"
        );
        // Kernel map names are 15 characters at most; longer ones would be cut.
        assert!(name.len() <= 15, "{name} is too long for a kernel map name");
    }
}

#[test]
fn shared_types_have_no_implicit_padding() {
    // Pod types cross the kernel boundary byte for byte: padding would be uninitialised.
    assert_eq!(size_of::<Counter>(), 16);
    assert_eq!(size_of::<PrefixEntry>(), 4);
    assert_eq!(size_of::<V4Row>(), 512);
    assert_eq!(size_of::<V4Chunk>(), 256);
    assert_eq!(size_of::<V4Rows>(), 32 << 20);
    assert_eq!(size_of::<V4Chunks>(), V4_CHUNKS as usize * 256);
    assert_eq!(size_of::<TopEntry>(), 24);
    assert_eq!(size_of::<Attachment>(), 24);
    assert_eq!(
        size_of::<GuardConfig>(),
        4 + 4 + size_of::<guard_common::ratelimit::RatePolicy>() + 4 + 4 + 65536
    );
    assert_eq!(size_of::<guard_common::ratelimit::RatePolicy>(), 3 * 16 + 8);
}
