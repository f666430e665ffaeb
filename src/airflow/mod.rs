//! What Airflow is, as data: versions and their alembic revisions, the table catalog, Fernet.

pub mod catalog;
pub mod fernet;
pub mod versions;
