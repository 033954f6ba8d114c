//! The `ai.rapid` operator domain: every custom operator the project defines, registered by
//! `runtime::Runtime` on each session it builds. Graphs name these operators only after a rewrite
//! under `deploy/export/`; a plain export never does.

use ort::operator::OperatorDomain;

/// The domain, as the rewritten graphs spell it.
pub const DOMAIN: &str = "ai.rapid";

/// A fresh domain, for one session (`WinogradConv` keeps per-session workspaces), with
/// `ai.rapid::FlashAttention` (`crate::attention`) and `ai.rapid::WinogradConv` (`crate::winograd`).
pub fn domain() -> ort::Result<OperatorDomain> {
    OperatorDomain::new(DOMAIN)?
        .add(crate::attention::op::FlashAttentionOp)?
        .add(crate::winograd::op::WinogradConvOp::default())
}
