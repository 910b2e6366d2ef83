//! Storage-level promises: migrations refuse a newer database; the secret file is kept.

use crate::common::*;
use tsunagi::config::Config;

#[tokio::test]
async fn database_migrated_by_a_newer_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/t.db", dir.path().display());
    let mut app = spawn_app_in(dir, &[("TSUNAGI_DATABASE_URL", &db)]).await;
    app.stop().await.unwrap();
    let db = app.dir.path().join("t.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from the future', 1, x'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let env = [(
        "TSUNAGI_DATABASE_URL".to_owned(),
        format!("sqlite://{}", db.display()),
    )];
    let config = Config::from_map(&env.into_iter().collect()).unwrap();
    let err = tsunagi::server::migrate(&config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("newer tsunagi"), "{err}");
}

#[test]
fn generated_secret_is_private_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let a = tsunagi::auth::load_or_create_secret(dir.path()).unwrap();
    let b = tsunagi::auth::load_or_create_secret(dir.path()).unwrap();
    assert_eq!(a, b);
    assert!(a.len() >= 32);
    let mode = std::fs::metadata(dir.path().join("jwt_secret"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
