//! Runs the object store conformance suite against the local-directory backend, one test
//! per check, each in a fresh directory.

use vigia_objects::conformance::{self, SignedUrls, Subject};
use vigia_objects::{open, OpenContext};

macro_rules! conformance_tests {
    ($($check:ident),+ $(,)?) => {$(
        #[tokio::test]
        async fn $check() {
            let dir = tempfile::tempdir().unwrap();
            let ctx = OpenContext::new(dir.path())
                .with_signing("a test signing key of 32 bytes!!", "http://127.0.0.1:8080");
            let objects = open("", &ctx).await.unwrap();
            conformance::$check(&Subject { objects, signed_urls: SignedUrls::Vigia }).await;
        }
    )+};
}

vigia_objects::for_each_objects_check!(conformance_tests);

/// A failed upload leaves no staging file behind in the object directory.
#[tokio::test]
async fn failed_uploads_leave_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let objects = open(
        &format!("file://{}", dir.path().display()),
        &OpenContext::new("/unused"),
    )
    .await
    .unwrap();
    let subject = Subject {
        objects,
        signed_urls: SignedUrls::Vigia,
    };
    conformance::put_with_wrong_size_stores_nothing(&subject).await;
    let mut left = Vec::new();
    for entry in walk(dir.path()) {
        left.push(
            entry
                .strip_prefix(dir.path())
                .unwrap()
                .display()
                .to_string(),
        );
    }
    left.sort();
    assert_eq!(left, vec!["size/ok"]);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
