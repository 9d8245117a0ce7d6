fn main() -> std::process::ExitCode {
    common::cli::main::<glance_load::Cli>()
}
