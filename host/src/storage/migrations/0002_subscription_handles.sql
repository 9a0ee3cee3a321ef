-- Each subscription gets an opaque, server-issued handle: what its plugin is given and must name
-- in a fire. Fires are honoured only for a stored, enabled subscription of the plugin that holds
-- the handle, so a plugin cannot start another pipeline, and a deleted subscription (or one of a
-- deleted pipeline registered again) fires nothing.
ALTER TABLE subscriptions ADD COLUMN handle TEXT;
UPDATE subscriptions SET handle = lower(hex(randomblob(16)));
CREATE UNIQUE INDEX subscriptions_by_handle ON subscriptions (plugin_id, handle);
