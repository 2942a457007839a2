mod common;

fn main() {
    let _ = common::scale();
}
