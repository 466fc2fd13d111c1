//! An in-memory [`Store`] for tests of the orchestration.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::{Op, Store, StoreError};

#[derive(Default)]
pub struct MemStore {
    data: Mutex<BTreeMap<String, Vec<u8>>>,
    refuse: Arc<AtomicBool>,
}

impl MemStore {
    /// A switch that makes every commit fail, and change nothing, while it is on: for
    /// tests of what the daemon does when its store refuses a write (a full disk).
    pub fn refusal_switch(&self) -> Arc<AtomicBool> {
        self.refuse.clone()
    }
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
        if self.refuse.load(Ordering::SeqCst) {
            return Err(StoreError::Txn("refused by the test switch".into()));
        }
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
