fn main() -> std::process::ExitCode {
    filter::cli::main::<glance_dump::Cli>()
}
