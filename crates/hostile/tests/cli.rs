//! The binary as CI calls it: it lists its cases, and against an address
//! where nothing listens it says so and exits with the usage code instead
//! of reporting a gateway failure. (Building this test is also what makes
//! `cargo test` leave `courtside-hostile` in the target folder for
//! `.ci/hostile`.)

use std::process::Command;

fn hostile() -> Command {
    Command::new(env!("CARGO_BIN_EXE_courtside-hostile"))
}

#[test]
fn it_lists_over_a_hundred_cases_in_every_group() {
    let output = hostile().arg("--list").output().expect("runs");
    assert!(output.status.success(), "{output:?}");
    let names = String::from_utf8(output.stdout).expect("utf-8");
    let names: Vec<&str> = names.lines().collect();
    assert!(names.len() > 100, "{} cases", names.len());
    for group in [
        "routing/",
        "ingest/",
        "auth/",
        "limits/",
        "ws/",
        "sse/",
        "conn/",
        "ratelimit/",
        "footprint/",
        "health/",
    ] {
        assert!(names.iter().any(|n| n.starts_with(group)), "no {group} case");
    }
    assert!(names.last().is_some_and(|n| n.starts_with("health/")), "health is checked last");
}

#[test]
fn an_address_it_cannot_resolve_is_a_usage_error() {
    let output = hostile()
        .args(["--addr", "no-such-host.invalid:80", "--publish-token", "unused"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot resolve"), "{output:?}");
}
