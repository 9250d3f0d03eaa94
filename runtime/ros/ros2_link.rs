//! Build script of the binaries that can link the `ros2` adapter (reflex-cli's `reflex`,
//! reflex-hil's `reflex-hil`): in a real `ros2` build (not `ros2-doc-only`), passes
//! `$REFLEX_ROS2_LINK_ARGS` to the linker of the package's binaries. `scripts/setup-ros2`
//! sets it for the PyPI-wheel ROS 2 of CI (libpython for the wheels' librcl, and an rpath to
//! the venv's libraries); a Jetson with ROS 2 from apt leaves it unset and links nothing extra.
//! (Link arguments of a library's build script do not reach the binaries, hence this file.)
//! Only the binaries get them: a test or example target that links r2r itself (none does
//! today; the tests run the binaries) would need `cargo:rustc-link-arg-tests` too.

fn main() {
    println!("cargo:rerun-if-env-changed=REFLEX_ROS2_LINK_ARGS");
    let real_ros2 = std::env::var_os("CARGO_FEATURE_ROS2").is_some()
        && std::env::var_os("CARGO_FEATURE_ROS2_DOC_ONLY").is_none();
    if !real_ros2 {
        return;
    }
    if let Ok(args) = std::env::var("REFLEX_ROS2_LINK_ARGS") {
        for arg in args.split_whitespace() {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    }
}
