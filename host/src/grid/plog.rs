//! On-disk layout of partitioned kv data and of each partition's replication log.
//!
//! | what | table | key | value |
//! | --- | --- | --- | --- |
//! | data | `Kv` | partition (u16 BE) · service · NUL · key | value |
//! | log | `PartLog` | partition (u16 BE) · lsn (u64 BE) | [`Entry`] (postcard) |
//! | meta | `Meta` | `part/` · partition (u16 BE) | [`PartMeta`] (postcard) |
//!
//! A change is applied to the data, appended to the log and recorded in the meta in one
//! write batch, so data and log never disagree after a crash. The log keeps the last
//! `keep` entries (a replica further behind is sent a snapshot of the data instead).

use serde::{Deserialize, Serialize};

use super::{BatchOp, Storage, StorageError, StorageResult, Table};

pub use nanogrid_wire::grid::{Entry, Op, encode};

/// A replica's durable position: its last entry and the highest epoch it has promised
/// to (it refuses entries from primaries of older epochs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartMeta {
    pub last: u64,
    pub last_epoch: u64,
    pub fence: u64,
}

pub fn data_key(p: u32, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + key.len());
    k.extend_from_slice(&(p as u16).to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// [`data_key`] of `service \0 key`, built in one allocation.
pub fn kv_data_key(p: u32, service: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + service.len() + 1 + key.len());
    k.extend_from_slice(&(p as u16).to_be_bytes());
    k.extend_from_slice(service.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn log_key(p: u32, lsn: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(10);
    k.extend_from_slice(&(p as u16).to_be_bytes());
    k.extend_from_slice(&lsn.to_be_bytes());
    k
}

fn meta_key(p: u32) -> Vec<u8> {
    let mut k = b"part/".to_vec();
    k.extend_from_slice(&(p as u16).to_be_bytes());
    k
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> StorageResult<T> {
    postcard::from_bytes(bytes).map_err(|e| StorageError::Io(format!("a grid record is unreadable: {e}")))
}

pub fn load_meta(s: &dyn Storage, p: u32) -> StorageResult<PartMeta> {
    match s.get(Table::Meta, &meta_key(p))? {
        Some(b) => decode(&b),
        None => Ok(PartMeta::default()),
    }
}

pub fn meta_op(p: u32, meta: &PartMeta) -> BatchOp {
    BatchOp::Put(Table::Meta, meta_key(p), encode(meta))
}

/// The batch that applies `entries` (consecutive, after `meta.last`) and records `after`.
pub fn append_ops(p: u32, entries: &[Entry], after: &PartMeta, keep: u64) -> Vec<BatchOp> {
    let mut ops = Vec::with_capacity(entries.len() * 3 + 1);
    for e in entries {
        match &e.op {
            Op::Put { key, value } => ops.push(BatchOp::Put(Table::Kv, data_key(p, key), value.clone())),
            Op::Delete { key } => ops.push(BatchOp::Delete(Table::Kv, data_key(p, key))),
            Op::Noop => {}
        }
        ops.push(BatchOp::Put(Table::PartLog, log_key(p, e.lsn), encode(e)));
        if e.lsn > keep {
            ops.push(BatchOp::Delete(Table::PartLog, log_key(p, e.lsn - keep)));
        }
    }
    ops.push(meta_op(p, after));
    ops
}

/// Up to `limit` consecutive entries from `from`; empty when `from` is no longer logged.
pub fn read_entries(s: &dyn Storage, p: u32, from: u64, limit: usize) -> StorageResult<Vec<Entry>> {
    let prefix = (p as u16).to_be_bytes();
    let rows = s.scan(Table::PartLog, &prefix, Some(&log_key(p, from.saturating_sub(1))), limit)?;
    let mut out = Vec::with_capacity(rows.len());
    for (_, v) in rows {
        let e: Entry = decode(&v)?;
        if e.lsn != from + out.len() as u64 {
            break;
        }
        out.push(e);
    }
    Ok(out)
}

/// The epoch of the logged entry `lsn`, if it is still logged (`Some(0)` for lsn 0).
pub fn entry_epoch(s: &dyn Storage, p: u32, lsn: u64) -> StorageResult<Option<u64>> {
    if lsn == 0 {
        return Ok(Some(0));
    }
    match s.get(Table::PartLog, &log_key(p, lsn))? {
        Some(v) => Ok(Some(decode::<Entry>(&v)?.epoch)),
        None => Ok(None),
    }
}

/// Every data row of a partition: (namespaced key, value).
pub fn data_rows(s: &dyn Storage, p: u32) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let prefix = (p as u16).to_be_bytes();
    let rows = s.scan(Table::Kv, &prefix, None, usize::MAX)?;
    Ok(rows.into_iter().map(|(k, v)| (k[2..].to_vec(), v)).collect())
}

/// Deletes of a partition's data and log (a replica about to install a snapshot).
pub fn clear_ops(s: &dyn Storage, p: u32) -> StorageResult<Vec<BatchOp>> {
    let prefix = (p as u16).to_be_bytes();
    let mut ops = Vec::new();
    for t in [Table::Kv, Table::PartLog] {
        for (k, _) in s.scan(t, &prefix, None, usize::MAX)? {
            ops.push(BatchOp::Delete(t, k));
        }
    }
    Ok(ops)
}

/// Keys of `prefix` (namespaced) in partition `p`, strictly after `after`.
pub fn list(s: &dyn Storage, p: u32, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> StorageResult<Vec<Vec<u8>>> {
    let pre = data_key(p, prefix);
    let aft = after.map(|a| data_key(p, a));
    let rows = s.scan(Table::Kv, &pre, aft.as_deref(), limit)?;
    Ok(rows.into_iter().map(|(k, _)| k[2..].to_vec()).collect())
}

const LAYOUT_KEY: &[u8] = b"kv-layout";
const LAYOUT: &[u8] = b"partitioned-1";

const PARTITIONS_KEY: &[u8] = b"kv-partitions";

/// How many partitions this data dir's grid has: the count stored when it was first
/// opened with a grid, 256 for one whose grid predates the setting (it was fixed then),
/// or, for a new one, `wanted`, which is stored. Blocking.
pub fn partitions(s: &dyn Storage, wanted: u32) -> StorageResult<u32> {
    if let Some(v) = s.get(Table::Meta, PARTITIONS_KEY)? {
        let stored = <[u8; 4]>::try_from(v.as_slice()).map(u32::from_be_bytes);
        return Ok(stored.unwrap_or(super::part::DEFAULT_PARTITIONS));
    }
    let count = match s.get(Table::Meta, LAYOUT_KEY)? {
        Some(_) => super::part::DEFAULT_PARTITIONS,
        None => wanted,
    };
    s.write(
        vec![BatchOp::Put(Table::Meta, PARTITIONS_KEY.to_vec(), count.to_be_bytes().to_vec())],
        super::Durability::Synced,
    )?;
    Ok(count)
}

/// Move kv rows of the unpartitioned layout (before the grid, `service \0 key`) to their
/// partitions (`count` of them), as entries of epoch 0. Runs once per data dir, at open.
/// Blocking.
pub fn migrate(s: &dyn Storage, keep: u64, count: u32) -> StorageResult<usize> {
    if s.get(Table::Meta, LAYOUT_KEY)?.as_deref() == Some(LAYOUT) {
        return Ok(0);
    }
    let rows = s.scan(Table::Kv, b"", None, usize::MAX)?;
    let mut metas: std::collections::BTreeMap<u32, PartMeta> = Default::default();
    let mut ops = Vec::new();
    let n = rows.len();
    for (k, v) in rows {
        let p = super::part::partition_of(&k, count);
        let meta = metas.entry(p).or_insert(load_meta(s, p)?);
        meta.last += 1;
        let e = Entry { lsn: meta.last, epoch: meta.last_epoch, op: Op::Put { key: k.clone(), value: v } };
        ops.push(BatchOp::Delete(Table::Kv, k));
        let after = *meta;
        ops.extend(append_ops(p, &[e], &after, keep));
    }
    ops.push(BatchOp::Put(Table::Meta, LAYOUT_KEY.to_vec(), LAYOUT.to_vec()));
    s.write(ops, super::Durability::Synced)?;
    if n > 0 {
        tracing::info!(rows = n, "moved kv data into partitions");
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{Durability, MemoryStorage};

    #[test]
    fn a_kv_row_built_in_one_go_is_the_row_built_in_two() {
        use crate::grid::part::{partition_of, partition_of_kv};
        for (service, key) in [("svc", "a"), ("bench", "key-9"), ("", ""), ("s", "\0x"), ("ünï", "cödé")] {
            let joined = crate::grid::kv_key(service, key);
            for count in [1, 7, 256, 4096] {
                let p = partition_of(&joined, count);
                assert_eq!(partition_of_kv(service, key, count), p, "{service:?} {key:?} over {count}");
                assert_eq!(kv_data_key(p, service, key), data_key(p, &joined));
            }
        }
    }

    #[test]
    fn the_log_keeps_its_tail_and_reads_back_in_order() {
        let s = MemoryStorage::default();
        let mut meta = PartMeta::default();
        for lsn in 1..=10 {
            let e = Entry { lsn, epoch: 1, op: Op::Put { key: b"s\0k".to_vec(), value: vec![lsn as u8] } };
            meta.last = lsn;
            meta.last_epoch = 1;
            s.write(append_ops(3, &[e], &meta, 4), Durability::Acked).unwrap();
        }
        assert_eq!(load_meta(&s, 3).unwrap().last, 10);
        assert!(read_entries(&s, 3, 2, 10).unwrap().is_empty(), "trimmed");
        let tail = read_entries(&s, 3, 7, 10).unwrap();
        assert_eq!(tail.iter().map(|e| e.lsn).collect::<Vec<_>>(), vec![7, 8, 9, 10]);
        assert_eq!(entry_epoch(&s, 3, 9).unwrap(), Some(1));
        assert_eq!(data_rows(&s, 3).unwrap(), vec![(b"s\0k".to_vec(), vec![10])]);
        assert!(data_rows(&s, 4).unwrap().is_empty());
        s.write(clear_ops(&s, 3).unwrap(), Durability::Acked).unwrap();
        assert!(data_rows(&s, 3).unwrap().is_empty());
    }

    #[test]
    fn a_data_dir_keeps_the_partition_count_it_was_made_with() {
        let s = MemoryStorage::default();
        assert_eq!(partitions(&s, 64).unwrap(), 64, "a new data dir takes the count asked for");
        assert_eq!(partitions(&s, 256).unwrap(), 64, "and keeps it");
        // A data dir whose grid predates the setting had 256.
        let old = MemoryStorage::default();
        migrate(&old, 100, 256).unwrap();
        assert_eq!(partitions(&old, 64).unwrap(), 256);
        assert_eq!(partitions(&old, 64).unwrap(), 256);
    }

    #[test]
    fn old_unpartitioned_rows_move_once() {
        let s = MemoryStorage::default();
        s.write(vec![BatchOp::Put(Table::Kv, b"svc\0a".to_vec(), b"1".to_vec())], Durability::Acked).unwrap();
        assert_eq!(migrate(&s, 100, 256).unwrap(), 1);
        assert_eq!(migrate(&s, 100, 256).unwrap(), 0);
        let p = super::super::part::partition_of(b"svc\0a", 256);
        assert_eq!(data_rows(&s, p).unwrap(), vec![(b"svc\0a".to_vec(), b"1".to_vec())]);
        assert_eq!(load_meta(&s, p).unwrap().last, 1);
    }
}
