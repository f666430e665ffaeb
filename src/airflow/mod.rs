//! What Airflow is, as data: versions and their alembic revisions.

pub mod catalog;
pub mod versions;
