//! A minimal binary that can act as the sandbox init: used by the integration tests as
//! `RunSpec::init_exe` (the test harness binary cannot, it starts threads before `main`).
fn main() {
    rbuild_sandbox::init_if_requested();
    eprintln!("rbuild-sandbox-test-init: only runs as a sandbox init");
    std::process::exit(2);
}
