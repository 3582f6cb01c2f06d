//! [`Storage`] over RocksDB: one database per node, one column family per [`Table`].

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};

use super::{BatchOp, Durability, Storage, StorageError, StorageResult, Table};

pub struct RocksStorage {
    db: DB,
}

fn io(e: rocksdb::Error) -> StorageError {
    StorageError::Io(e.into_string())
}

impl RocksStorage {
    /// Open (or create) the database in `dir`. Blocking.
    pub fn open(dir: &Path) -> StorageResult<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Small defaults: a node may share its machine with many others.
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(4);
        let cfs = Table::ALL.iter().map(|t| {
            let mut o = Options::default();
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(t.name(), o)
        });
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(io)?;
        Ok(RocksStorage { db })
    }

    fn cf(&self, t: Table) -> StorageResult<&rocksdb::ColumnFamily> {
        self.db.cf_handle(t.name()).ok_or(StorageError::Closed)
    }
}

impl Storage for RocksStorage {
    fn get(&self, table: Table, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(table)?, key).map_err(io)
    }

    fn get_cached(&self, table: Table, key: &[u8]) -> StorageResult<Option<Option<Vec<u8>>>> {
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_read_tier(rocksdb::ReadTier::BlockCache);
        match self.db.get_cf_opt(self.cf(table)?, key, &opts) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    fn write(&self, ops: Vec<BatchOp>, durability: Durability) -> StorageResult<()> {
        let mut batch = WriteBatch::default();
        for op in ops {
            match op {
                BatchOp::Put(t, k, v) => batch.put_cf(self.cf(t)?, k, v),
                BatchOp::Delete(t, k) => batch.delete_cf(self.cf(t)?, k),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(durability == Durability::Synced);
        self.db.write_opt(batch, &wo).map_err(io)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = match after {
            Some(a) if a >= prefix => a,
            _ => prefix,
        };
        let iter = self.db.iterator_cf(self.cf(table)?, IteratorMode::From(start, Direction::Forward));
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(io)?;
            if !k.starts_with(prefix) {
                break;
            }
            if after.is_some_and(|a| &*k <= a) {
                continue;
            }
            out.push((k.into_vec(), v.into_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_scans_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RocksStorage::open(dir.path()).unwrap();
            s.write(
                vec![
                    BatchOp::Put(Table::Kv, b"a\0k2".to_vec(), b"2".to_vec()),
                    BatchOp::Put(Table::Kv, b"a\0k1".to_vec(), b"1".to_vec()),
                    BatchOp::Put(Table::Kv, b"b\0k1".to_vec(), b"x".to_vec()),
                    BatchOp::Put(Table::Services, b"a".to_vec(), b"{}".to_vec()),
                ],
                Durability::Synced,
            )
            .unwrap();
        }
        let s = RocksStorage::open(dir.path()).unwrap();
        let rows = s.scan(Table::Kv, b"a\0", None, 10).unwrap();
        assert_eq!(rows, vec![(b"a\0k1".to_vec(), b"1".to_vec()), (b"a\0k2".to_vec(), b"2".to_vec())]);
        let rows = s.scan(Table::Kv, b"a\0", Some(b"a\0k1"), 10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(s.get(Table::Services, b"a").unwrap(), Some(b"{}".to_vec()));
        assert_eq!(s.get(Table::Components, b"a").unwrap(), None);
        // Just written, so in the memtable: answered from memory.
        assert_eq!(s.get_cached(Table::Services, b"a").unwrap(), Some(Some(b"{}".to_vec())));
    }
}
