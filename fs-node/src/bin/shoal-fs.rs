fn main() {
    eprintln!("shoal-fs: not wired yet");
    std::process::exit(2);
}
