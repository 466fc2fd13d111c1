//! An in-memory [`Store`] for tests of the orchestration.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::{Op, Store, StoreError};

#[derive(Default)]
pub struct MemStore {
    data: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl Store for MemStore {
    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let d = self.data.lock().expect("store lock");
        Ok(d.range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn commit(&self, ops: &[Op]) -> Result<(), StoreError> {
        let mut d = self.data.lock().expect("store lock");
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    d.insert(k.clone(), v.clone());
                }
                Op::Delete(k) => {
                    d.remove(k);
                }
            }
        }
        Ok(())
    }
}
