//! The `k3s-harness` command; see `k3s-harness --help`.

fn main() -> std::process::ExitCode {
    k3s_harness::cli::main()
}
