//! Sets a topic's configs with Kafka's IncrementalAlterConfigs (KIP-339):
//! only the configs the spec names change. The older AlterConfigs, the only
//! one rust-rdkafka wraps, replaces a topic's whole dynamic config and so
//! resets what an administrator set beside the pipeline (a
//! `max.message.bytes`, a `min.insync.replicas`). rust-rdkafka has no
//! binding for the incremental call, so this calls librdkafka (which has
//! had it since 2.2) through rdkafka-sys; every handle is owned by a guard
//! that destroys it on every path.

use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::DefaultClientContext;

/// Sets `configs` on `topic`, leaving every other config as it is. Blocks
/// up to `timeout` (call it off the async executor).
pub fn set(admin: &AdminClient<DefaultClientContext>, topic: &str, configs: &BTreeMap<String, String>, timeout: Duration) -> Result<(), String> {
    let c_string = |s: &str| CString::new(s).map_err(|_| format!("{s:?} holds a NUL byte"));
    let name = c_string(topic)?;
    let entries: Vec<(CString, CString)> = configs.iter().map(|(k, v)| Ok((c_string(k)?, c_string(v)?))).collect::<Result<_, String>>()?;
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let rk = admin.inner().native_ptr();
    // SAFETY: every pointer passed is either from librdkafka and alive (its
    // guard outlives the call) or a CString alive for the call; librdkafka
    // copies the resources it is given (the caller keeps ownership).
    unsafe {
        let resource = Guard(rd::rd_kafka_ConfigResource_new(rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC, name.as_ptr()), rd::rd_kafka_ConfigResource_destroy);
        for (key, value) in &entries {
            let error = rd::rd_kafka_ConfigResource_add_incremental_config(
                resource.0,
                key.as_ptr(),
                rd::rd_kafka_AlterConfigOpType_t::RD_KAFKA_ALTER_CONFIG_OP_TYPE_SET,
                value.as_ptr(),
            );
            if !error.is_null() {
                let error = Guard(error, rd::rd_kafka_error_destroy);
                return Err(format!("{}: {}", key.to_string_lossy(), text(rd::rd_kafka_error_string(error.0))));
            }
        }
        let options = Guard(rd::rd_kafka_AdminOptions_new(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_INCREMENTALALTERCONFIGS), rd::rd_kafka_AdminOptions_destroy);
        let mut errstr = [0 as c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(options.0, timeout_ms, errstr.as_mut_ptr(), errstr.len());
        let queue = Guard(rd::rd_kafka_queue_new(rk), rd::rd_kafka_queue_destroy);
        let mut resources = [resource.0];
        rd::rd_kafka_IncrementalAlterConfigs(rk, resources.as_mut_ptr(), resources.len(), options.0, queue.0);
        let event = rd::rd_kafka_queue_poll(queue.0, timeout_ms.saturating_add(1000));
        if event.is_null() {
            return Err(format!("no answer from Kafka within {timeout:?}"));
        }
        let event = Guard(event, rd::rd_kafka_event_destroy);
        if rd::rd_kafka_event_error(event.0) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(text(rd::rd_kafka_event_error_string(event.0)));
        }
        let result = rd::rd_kafka_event_IncrementalAlterConfigs_result(event.0);
        if result.is_null() {
            return Err("Kafka answered with another kind of result".into());
        }
        let mut count = 0;
        let answered = rd::rd_kafka_IncrementalAlterConfigs_result_resources(result, &mut count);
        for i in 0..count {
            let resource = *answered.add(i);
            let code = rd::rd_kafka_ConfigResource_error(resource);
            if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                let detail = rd::rd_kafka_ConfigResource_error_string(resource);
                return Err(if detail.is_null() { text(rd::rd_kafka_err2str(code)) } else { text(detail) });
            }
        }
    }
    Ok(())
}

/// A librdkafka handle and the function that destroys it.
struct Guard<T>(*mut T, unsafe extern "C" fn(*mut T));

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the handle came from librdkafka and is destroyed once.
            unsafe { (self.1)(self.0) }
        }
    }
}

/// A C string from librdkafka, as text.
///
/// # Safety
/// `s` is null or a NUL-terminated string alive for the call.
unsafe fn text(s: *const c_char) -> String {
    if s.is_null() {
        return "unknown error".into();
    }
    CStr::from_ptr(s).to_string_lossy().into_owned()
}
