fn main() -> std::process::ExitCode {
    common::cli::main::<cachewalk::Cli>()
}
