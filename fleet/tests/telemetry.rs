//! The trace context exists whatever the log level: `RAPID_LOG=warn` quiets the logs, never the
//! spans whose `traceparent` the jobs and images carry. (A test binary of its own: it installs the
//! process-wide subscriber.)

use rapid_fleet::telemetry::{continue_trace, init, traceparent, TelemetryConfig};

#[test]
fn spans_carry_and_continue_a_trace_even_when_logs_are_quiet() {
    std::env::set_var("RAPID_LOG", "warn");
    let _guard = init(&TelemetryConfig::default(), "rapid-test", "warn").unwrap();

    let span = tracing::info_span!(target: "rapid_worker::consumer", "job");
    let own = traceparent(&span).expect("an info span of the project has a trace context under RAPID_LOG=warn");
    assert!(own.starts_with("00-") && own.len() == 55, "{own}");

    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let child = tracing::info_span!(target: "rapid_scheduler::api", "request");
    continue_trace(&child, caller);
    let continued = traceparent(&child).unwrap();
    assert!(continued.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{continued}");
    assert!(!continued.contains("00f067aa0ba902b7"), "a span of its own under the caller's: {continued}");

    // Another crate's spans are not the project's to trace.
    let foreign = tracing::info_span!(target: "hyper::client", "connect");
    assert_eq!(traceparent(&foreign), None);
}
