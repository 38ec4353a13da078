fn main() -> std::process::ExitCode {
    walhook::cli::main()
}
