//! Property tests of the wire format (`proptest`): whatever bytes reach a worker or the scheduler
//! from the queue, decoding returns a value or an error and never panics, and every job the
//! scheduler can write reads back as itself.

use proptest::prelude::*;
use rapid_proto::{decode, encode, DecodeError, ImageFormat, Job, Priority, RequestFinished, Sampler, SCHEMA_VERSION};

fn job() -> impl Strategy<Value = Job> {
    let names = (".{0,40}", ".{0,40}", "[a-z]{0,12}", "[a-z0-9-]{0,20}", ".{0,200}", ".{0,80}");
    let numbers = (any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>(), -1.0e6f32..1.0e6, any::<u32>());
    let choices = (
        prop::sample::select(Sampler::ALL.to_vec()),
        prop::option::of(any::<bool>()),
        any::<bool>(),
        prop::sample::select(ImageFormat::ALL.to_vec()),
        prop::sample::select(vec![Priority::Interactive, Priority::Batch]),
        prop::option::of(any::<u64>()),
    );
    (names, numbers, choices).prop_map(
        |(
            (id, request_id, tenant, model, prompt, negative_prompt),
            (seed, width, height, steps, guidance_scale, attempt),
            (sampler, karras_sigmas, upscale, format, priority, deadline_ms),
        )| Job {
            v: SCHEMA_VERSION,
            id,
            request_id,
            tenant,
            model,
            prompt,
            negative_prompt,
            seed,
            width,
            height,
            steps,
            guidance_scale,
            sampler,
            karras_sigmas,
            upscale,
            format,
            priority,
            deadline_ms,
            attempt,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn every_job_reads_back_as_itself(job in job()) {
        prop_assert_eq!(decode::<Job>(&encode(&job)).unwrap(), job);
    }

    #[test]
    fn arbitrary_bytes_decode_to_an_error_or_a_value_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<Job>(&bytes);
        let _ = decode::<RequestFinished>(&bytes);
    }

    #[test]
    fn damaged_jobs_are_refused_or_read_consistently(job in job(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
        let bytes = encode(&job);
        let truncated = &bytes[..cut.index(bytes.len())];
        prop_assert!(decode::<Job>(truncated).is_err(), "a cut message never decodes");
        let mut flipped = bytes.clone();
        let at = flip.0.index(flipped.len());
        flipped[at] ^= flip.1.max(1);
        // A flipped byte may still be valid JSON (a digit of the seed); then it must read back
        // the same way twice, and never as another schema version.
        match decode::<Job>(&flipped) {
            Ok(read) => prop_assert_eq!(decode::<Job>(&encode(&read)).unwrap(), read),
            Err(DecodeError::UnsupportedVersion { found }) => prop_assert_ne!(found, SCHEMA_VERSION),
            Err(_) => {}
        }
    }

    #[test]
    fn other_schema_versions_are_named_not_misread(job in job(), version in any::<u32>().prop_filter("another version", |v| *v != SCHEMA_VERSION)) {
        let bytes = encode(&Job { v: version, ..job });
        let refused = matches!(decode::<Job>(&bytes), Err(DecodeError::UnsupportedVersion { found }) if found == version);
        prop_assert!(refused);
    }
}
