//! Checks a disk image written by a blkcheck run, on the host: every sector must hold the
//! pattern. Ignored by default; run it with the image's path:
//!
//! ```text
//! BLKCHECK_IMAGE=target/moat/disk.img cargo test -p blkcheck --test image -- --ignored
//! ```

use std::fs::File;
use std::io::Read;

#[test]
#[ignore = "needs BLKCHECK_IMAGE, the disk image after a blkcheck run"]
fn disk_image_holds_the_pattern() {
    let path = std::env::var("BLKCHECK_IMAGE").expect("set BLKCHECK_IMAGE to the disk image");
    let mut file = File::open(&path).expect("image opens");
    let mut buffer = vec![0u8; 1 << 20];
    let mut sector = 0u64;
    loop {
        let read = file.read(&mut buffer).expect("image reads");
        if read == 0 {
            break;
        }
        assert_eq!(read % blkcheck::SECTOR, 0, "image is whole sectors");
        if let Some(at) = blkcheck::first_mismatch(sector, &buffer[..read]) {
            panic!(
                "{path}: sector {} byte {} differs from the pattern",
                sector + (at / blkcheck::SECTOR) as u64,
                at % blkcheck::SECTOR
            );
        }
        sector += (read / blkcheck::SECTOR) as u64;
    }
    assert!(sector > 0, "empty image");
    println!("{path}: {sector} sectors hold the pattern");
}
