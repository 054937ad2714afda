//! Where the tests find the shared real datasets, and what happens when they are missing.

use std::path::PathBuf;

/// Whether a missing dataset fails the test instead of skipping it: set in CI (`CI`) and by
/// `PROGNOS_REQUIRE_DATA`.
pub(crate) fn data_required() -> bool {
    ["CI", "PROGNOS_REQUIRE_DATA"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty() && s != "0" && s != "false"))
}

/// The shared data directory holding `probe` (a path inside it): `$PROGNOS_SHARED_DATA`, else
/// `shared/data` beside the checkout. `None` (the caller skips, saying so) when it is not there,
/// unless [`data_required`], where the test fails.
pub(crate) fn shared_data(probe: &str) -> Option<PathBuf> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let found = std::env::var("PROGNOS_SHARED_DATA")
        .ok()
        .map(PathBuf::from)
        .into_iter()
        .chain([here.join("../../shared/data")])
        .find(|p| p.join(probe).exists());
    assert!(
        found.is_some() || !data_required(),
        "shared/data/{probe} not found, and CI / PROGNOS_REQUIRE_DATA require it \
         (set PROGNOS_SHARED_DATA to the data directory)"
    );
    found
}
