//! The project's `ai.rapid::FlashAttention` operator inside a real U-Net: the tiny fixture U-Net
//! (`tests/fixtures/models/tiny-sd-clip`) against its copy rewritten by
//! `deploy/export/fuse_attention.py --fused rapid` (`tiny-sd-clip-flash`, every attention block one
//! custom node), loaded through the engine's own `Runtime`, which registers the operator.

mod support;

use rapid_engine::parts::unet::Unet;
use rapid_engine::runtime::{Runtime, RuntimeOptions};
use support::{normal, predict, unet_path};

#[test]
fn unet_with_flash_attention_matches_the_plain_graph() {
    let runtime = Runtime::new(&RuntimeOptions { intra_threads: Some(2), ..RuntimeOptions::default() })
        .expect("ONNX Runtime did not load: run `bash deploy/setup.sh`");
    let mut plain = Unet::load(&runtime, &unet_path("tiny-sd-clip"), 2).unwrap();
    let mut fused = Unet::load(&runtime, &unet_path("tiny-sd-clip-flash"), 2).unwrap();
    // The fixture's own 16×16 latent with CLIP's 77 tokens, and a 12×12 latent (144 and 36 query
    // rows, off the kernel's 128-row tiles) with 10 tokens.
    for (side, tokens) in [(16, 77), (12, 10)] {
        let sample = normal((2, 4, side, side), 1);
        let hidden = normal((2, tokens, 32), 2);
        let expected = predict(&mut plain, &sample, &hidden);
        let got = predict(&mut fused, &sample, &hidden);
        let diff = (&got - &expected).iter().fold(0.0f32, |m, d| m.max(d.abs()));
        assert!(diff < 1e-4, "{side}×{side} latent, {tokens} tokens: max abs diff {diff}");
    }
}
