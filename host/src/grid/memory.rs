//! An in-memory [`Storage`] for unit tests of the logic above storage.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{BatchOp, Durability, Storage, StorageResult, SyncWait, Table};

/// Rows keyed by (table tag, key).
type Rows = BTreeMap<(u8, Vec<u8>), Vec<u8>>;

#[derive(Default)]
pub struct MemoryStorage {
    tables: Mutex<Rows>,
}

fn tag(t: Table) -> u8 {
    t as u8
}

impl Storage for MemoryStorage {
    fn get(&self, table: Table, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        Ok(self.tables.lock().unwrap().get(&(tag(table), key.to_vec())).cloned())
    }

    fn get_cached(&self, table: Table, key: &[u8]) -> StorageResult<Option<Option<Vec<u8>>>> {
        self.get(table, key).map(Some)
    }

    /// In memory nothing waits: every write may happen at once (so the replication tests
    /// run the path a `--sync never` store takes; their holding store takes the other).
    fn write_now(&self, ops: &[BatchOp]) -> Option<StorageResult<SyncWait>> {
        Some(self.write(ops.to_vec(), Durability::Acked).map(|()| SyncWait::done()))
    }

    fn write(&self, ops: Vec<BatchOp>, _durability: Durability) -> StorageResult<()> {
        let mut t = self.tables.lock().unwrap();
        for op in ops {
            match op {
                BatchOp::Put(table, k, v) => {
                    t.insert((tag(table), k), v);
                }
                BatchOp::Delete(table, k) => {
                    t.remove(&(tag(table), k));
                }
            }
        }
        Ok(())
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let t = self.tables.lock().unwrap();
        Ok(t.range((tag(table), prefix.to_vec())..)
            .take_while(|((tb, k), _)| *tb == tag(table) && k.starts_with(prefix))
            .filter(|((_, k), _)| after.is_none_or(|a| k.as_slice() > a))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
}
