ALTER TABLE `notifications` ADD `check_at` integer;--> statement-breakpoint
CREATE INDEX `notifications_pending_idx` ON `notifications` (`check_at`) WHERE "notifications"."push_status" = 'pending' or "notifications"."email_status" = 'pending';--> statement-breakpoint
UPDATE `notifications` SET `check_at` = 0 WHERE `push_status` = 'pending' OR `email_status` = 'pending';
