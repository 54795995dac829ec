//! What operators read: the pinned maps in Kubernetes terms (`inspect`),
//! `lb trace` reports (`explain`), and how both are printed (`output`).
pub mod explain;
pub mod inspect;
pub mod output;
