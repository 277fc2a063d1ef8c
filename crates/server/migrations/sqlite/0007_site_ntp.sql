-- The NTP servers a site's doors ask, as the admin names them (separated by spaces; NULL: the
-- doors' built-in pool.ntp.org and time.cloudflare.com). Doors receive them in the
-- authenticated sync answer and keep them in flash.
ALTER TABLE sites ADD COLUMN ntp_servers TEXT;
