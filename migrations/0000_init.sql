CREATE TABLE `accounts` (
	`id` text PRIMARY KEY NOT NULL,
	`org_id` text NOT NULL,
	`type` text NOT NULL,
	`name` text NOT NULL,
	`email` text,
	`meta` text NOT NULL,
	`agent` text,
	`created_at` text NOT NULL,
	`updated_at` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `accounts_org_idx` ON `accounts` (`org_id`,`id`);--> statement-breakpoint
CREATE INDEX `accounts_org_type_idx` ON `accounts` (`org_id`,`type`,`id`);--> statement-breakpoint
CREATE TABLE `api_keys` (
	`id` text PRIMARY KEY NOT NULL,
	`org_id` text NOT NULL,
	`name` text,
	`key_hash` text NOT NULL,
	`created_at` text NOT NULL,
	`revoked_at` text
);
--> statement-breakpoint
CREATE UNIQUE INDEX `api_keys_hash_idx` ON `api_keys` (`key_hash`);--> statement-breakpoint
CREATE INDEX `api_keys_org_idx` ON `api_keys` (`org_id`,`id`);--> statement-breakpoint
CREATE TABLE `attachments` (
	`id` text PRIMARY KEY NOT NULL,
	`org_id` text NOT NULL,
	`name` text NOT NULL,
	`content_type` text NOT NULL,
	`size` integer NOT NULL,
	`sha256` text NOT NULL,
	`object_key` text NOT NULL,
	`created_by` text,
	`created_at` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `attachments_org_idx` ON `attachments` (`org_id`,`id`);--> statement-breakpoint
CREATE TABLE `conversations` (
	`id` text PRIMARY KEY NOT NULL,
	`org_id` text NOT NULL,
	`room_id` text NOT NULL,
	`name` text,
	`description` text,
	`meta` text NOT NULL,
	`contact_id` text,
	`message_count` integer NOT NULL,
	`last_message_at` text,
	`activity_at` text NOT NULL,
	`version` integer NOT NULL,
	`created_at` text NOT NULL,
	`updated_at` text NOT NULL,
	`deleted_at` text
);
--> statement-breakpoint
CREATE INDEX `conversations_org_activity_idx` ON `conversations` (`org_id`,`activity_at`,`id`);--> statement-breakpoint
CREATE INDEX `conversations_room_activity_idx` ON `conversations` (`room_id`,`activity_at`,`id`);--> statement-breakpoint
CREATE INDEX `conversations_contact_idx` ON `conversations` (`org_id`,`contact_id`,`activity_at`);--> statement-breakpoint
CREATE TABLE `messages` (
	`id` text PRIMARY KEY NOT NULL,
	`org_id` text NOT NULL,
	`room_id` text NOT NULL,
	`conversation_id` text NOT NULL,
	`seq` integer NOT NULL,
	`author_id` text,
	`type` text NOT NULL,
	`text` text,
	`data` text,
	`attachments` text DEFAULT '[]' NOT NULL,
	`client_message_id` text,
	`created_at` text NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `messages_conversation_seq_idx` ON `messages` (`conversation_id`,`seq`);--> statement-breakpoint
CREATE INDEX `messages_org_created_idx` ON `messages` (`org_id`,`created_at`);--> statement-breakpoint
CREATE TABLE `orgs` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`created_at` text NOT NULL
);
--> statement-breakpoint
CREATE TABLE `participants` (
	`room_id` text NOT NULL,
	`account_id` text NOT NULL,
	`org_id` text NOT NULL,
	`role` text NOT NULL,
	`auto_respond` integer NOT NULL,
	`joined_at` text NOT NULL,
	PRIMARY KEY(`room_id`, `account_id`)
);
--> statement-breakpoint
CREATE INDEX `participants_account_idx` ON `participants` (`org_id`,`account_id`);--> statement-breakpoint
CREATE TABLE `rooms` (
	`id` text PRIMARY KEY NOT NULL,
	`org_id` text NOT NULL,
	`type` text NOT NULL,
	`name` text,
	`meta` text NOT NULL,
	`dm_key` text,
	`version` integer NOT NULL,
	`created_at` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `rooms_org_idx` ON `rooms` (`org_id`,`created_at`,`id`);--> statement-breakpoint
CREATE UNIQUE INDEX `rooms_dm_key_idx` ON `rooms` (`org_id`,`dm_key`);