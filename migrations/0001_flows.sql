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
CREATE TABLE `flow_instances` (
	`conversation_id` text NOT NULL,
	`agent_id` text NOT NULL,
	`org_id` text NOT NULL,
	`generation` integer NOT NULL,
	PRIMARY KEY(`conversation_id`, `agent_id`)
);
