//! The events this service consumes (go-micro's `subscriber` package): its own
//! `user.created` and `user.deleted`, logged here; put what should follow a
//! registration or a removal (a welcome mail, cleaning up) here.

use crate::proto;
use rmicro::broker::typed::Event;

/// A user registered (on this node or another).
pub async fn on_created(event: Event<proto::UserEvent>) -> Result<(), rmicro::Error> {
    let user = event.message();
    tracing::info!(user_id = user.user_id, user_name = %user.user_name, "user created");
    Ok(())
}

/// A user was removed.
pub async fn on_deleted(event: Event<proto::UserEvent>) -> Result<(), rmicro::Error> {
    let user = event.message();
    tracing::info!(user_id = user.user_id, user_name = %user.user_name, "user deleted");
    Ok(())
}
