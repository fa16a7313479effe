//! The CPU backend through the shared checks (CPU vs CPU is trivially equal), and the
//! properties that make it a trustworthy reference: chunked == whole, step == scan.

mod common;
