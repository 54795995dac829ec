//! What operators read: the pinned maps in Kubernetes terms (`inspect`),
//! `lb trace` reports (`explain`), and how both are printed (`output`);
//! `commands` holds what each `lb` command does.
pub mod commands;
pub mod explain;
pub mod inspect;
pub mod output;
