fn main() {
    println!("delistd: under construction");
}
