//! The audit trail, read by auditors and admins.

use erp_platform::audit::{AuditEntry, AuditFilter};
use erp_platform::identity::Caller;
use erp_platform::pagination::Page;

use super::EventService;
use crate::access::{AUDITORS, require};
use crate::error::EventError;
use crate::paging::paging;

impl EventService {
    pub(crate) async fn list_audit(
        &self,
        caller: Option<&Caller>,
        filter: AuditFilter,
        limit: u32,
        cursor: &str,
    ) -> Result<Page<AuditEntry>, EventError> {
        require(caller, AUDITORS)?;
        let (limit, cursor) = paging(limit, cursor)?;
        Ok(self
            .catalog
            .audit()
            .list(&filter, limit, cursor.as_ref())
            .await?)
    }
}
