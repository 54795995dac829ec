//! What operators read: the pinned maps in Kubernetes terms (`inspect`),
//! `lb trace` reports (`explain`), session-affinity entries (`affinity`), the agent's published status (`status`),
//! and how they are printed (`output`); `commands` holds what each `lb`
//! command does.
pub mod affinity;
pub mod commands;
pub mod explain;
pub mod inspect;
pub mod output;
pub mod status;
