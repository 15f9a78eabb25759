CREATE TABLE `flow_instances` (
	`conversation_id` text NOT NULL,
	`agent_id` text NOT NULL,
	`org_id` text NOT NULL,
	`generation` integer NOT NULL,
	PRIMARY KEY(`conversation_id`, `agent_id`)
);
--> statement-breakpoint
CREATE TABLE `flow_runs` (
	`id` text PRIMARY KEY NOT NULL,
	`org_id` text NOT NULL,
	`agent_id` text NOT NULL,
	`conversation_id` text NOT NULL,
	`room_id` text NOT NULL,
	`trigger` text NOT NULL,
	`trigger_key` text NOT NULL,
	`message_id` text,
	`event_id` text NOT NULL,
	`seq` integer NOT NULL,
	`depth` integer DEFAULT 0 NOT NULL,
	`status` text NOT NULL,
	`error` text,
	`started_at` text NOT NULL,
	`updated_at` text NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `flow_runs_trigger_idx` ON `flow_runs` (`conversation_id`,`agent_id`,`trigger_key`);--> statement-breakpoint
CREATE INDEX `flow_runs_queue_idx` ON `flow_runs` (`conversation_id`,`agent_id`,`status`,`seq`);--> statement-breakpoint
CREATE INDEX `flow_runs_org_idx` ON `flow_runs` (`org_id`,`id`);--> statement-breakpoint
CREATE INDEX `flow_runs_agent_idx` ON `flow_runs` (`org_id`,`agent_id`,`id`);--> statement-breakpoint
CREATE TABLE `notification_deliveries` (
	`notification_id` text NOT NULL,
	`channel` text NOT NULL,
	`target` text NOT NULL,
	`status` text NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`claimed_at` integer,
	`error` text,
	`updated_at` text NOT NULL,
	PRIMARY KEY(`notification_id`, `channel`, `target`)
);
--> statement-breakpoint
CREATE TABLE `notification_preferences` (
	`account_id` text PRIMARY KEY NOT NULL,
	`org_id` text NOT NULL,
	`websocket` integer NOT NULL,
	`push` integer NOT NULL,
	`email` integer NOT NULL,
	`muted_room_ids` text NOT NULL,
	`updated_at` text NOT NULL
);
--> statement-breakpoint
CREATE TABLE `notification_rules` (
	`id` text PRIMARY KEY NOT NULL,
	`org_id` text NOT NULL,
	`name` text NOT NULL,
	`topic` text NOT NULL,
	`channels` text NOT NULL,
	`recipients` text NOT NULL,
	`priority` text NOT NULL,
	`template` text NOT NULL,
	`created_at` text NOT NULL,
	`updated_at` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `notification_rules_org_idx` ON `notification_rules` (`org_id`,`id`);--> statement-breakpoint
CREATE TABLE `notifications` (
	`id` text PRIMARY KEY NOT NULL,
	`org_id` text NOT NULL,
	`account_id` text NOT NULL,
	`rule_id` text NOT NULL,
	`event_id` text NOT NULL,
	`title` text NOT NULL,
	`body` text NOT NULL,
	`priority` text NOT NULL,
	`websocket_status` text,
	`push_status` text,
	`email_status` text,
	`read_at` text,
	`created_at` text NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `notifications_event_rule_account_idx` ON `notifications` (`event_id`,`rule_id`,`account_id`);--> statement-breakpoint
CREATE INDEX `notifications_account_idx` ON `notifications` (`org_id`,`account_id`,`id`);--> statement-breakpoint
CREATE TABLE `push_subscriptions` (
	`id` text PRIMARY KEY NOT NULL,
	`org_id` text NOT NULL,
	`account_id` text NOT NULL,
	`endpoint` text NOT NULL,
	`p256dh` text NOT NULL,
	`auth` text NOT NULL,
	`created_at` text NOT NULL,
	`updated_at` text NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `push_subscriptions_account_endpoint_idx` ON `push_subscriptions` (`account_id`,`endpoint`);--> statement-breakpoint
CREATE INDEX `push_subscriptions_org_account_idx` ON `push_subscriptions` (`org_id`,`account_id`,`id`);--> statement-breakpoint
CREATE TABLE `attachment_refs` (
	`attachment_id` text NOT NULL,
	`conversation_id` text NOT NULL,
	`room_id` text NOT NULL,
	`org_id` text NOT NULL,
	`created_at` text NOT NULL,
	PRIMARY KEY(`attachment_id`, `conversation_id`)
);
--> statement-breakpoint
ALTER TABLE `attachments` ADD `conversation_id` text;