//! Which nodes run how many instances of each service: the control state's assignment,
//! and the shape placement and experiments work on.

use std::collections::BTreeMap;

/// Service name → node id → instances on that node.
pub type Assignment = BTreeMap<String, BTreeMap<String, u32>>;
