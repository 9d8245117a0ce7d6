fn main() -> std::process::ExitCode {
    filter::cli::main::<cachewalk::Cli>()
}
