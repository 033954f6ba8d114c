//! The `ai.rapid` operator domain: every custom operator the project defines, kept apart from the
//! pipeline they serve (each is an experiment a rewritten graph opts into), registered by
//! `runtime::Runtime` on each session it builds. Graphs name these operators only after a rewrite
//! under `deploy/export/`; a plain export never does.

use ort::operator::OperatorDomain;

pub mod attention;
pub mod winograd;

/// The domain, as the rewritten graphs spell it.
pub const DOMAIN: &str = "ai.rapid";

/// A fresh domain, for one session (`WinogradConv` keeps per-session workspaces), with
/// `ai.rapid::FlashAttention` ([`attention`]) and `ai.rapid::WinogradConv` ([`winograd`]).
pub fn domain() -> ort::Result<OperatorDomain> {
    OperatorDomain::new(DOMAIN)?.add(attention::op::FlashAttentionOp)?.add(winograd::op::WinogradConvOp::default())
}
